//! Reading the fast path's per-CPU counters.
