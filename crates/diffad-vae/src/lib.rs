//! diffad-vae (under construction).
