//! template (under construction).
