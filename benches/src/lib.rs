//! Baselines and helpers shared by the benchmarks.
