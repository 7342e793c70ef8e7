//! diffad-diffusion (under construction).
