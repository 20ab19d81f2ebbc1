//! Model files in and out. Nothing here computes; everything here distrusts its input.

pub mod checkpoint;
