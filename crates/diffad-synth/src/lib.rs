//! diffad-synth (under construction).
