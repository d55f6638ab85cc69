//! cohort (under construction).
