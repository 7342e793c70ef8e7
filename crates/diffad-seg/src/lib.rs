//! diffad-seg (under construction).
