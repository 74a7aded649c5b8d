//! gRPC A27 bootstrap (work in progress).
