//! Cairn client: routes reads and writes to replicas by consistent hashing and verifies every byte it reads (to come).
