//! Training windows over a token stream (llama2.c convention) and their batch order.
