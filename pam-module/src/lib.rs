//! pam_habitus.so (being written).
