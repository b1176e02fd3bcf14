//! ClusterShell-style node sets: `cn[001-100]`, `cn[1,3,5-7]`, `r[1-2]n[01-40/2]`.
