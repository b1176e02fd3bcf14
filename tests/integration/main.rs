//! Integration tests: xboot against real peers in private network namespaces.
//! Run as root (the xtask `test` command does so); each test makes and removes its own
//! namespaces and kills only the processes it started.
