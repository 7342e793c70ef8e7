//! diffad-metrics (under construction).
