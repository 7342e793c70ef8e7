//! diffad-nn (under construction).
