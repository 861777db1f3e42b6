//! `pgwarden backup` and `pgwarden wal` on real throwaway clusters with a local repository.
