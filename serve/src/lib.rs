//! LLM pipeline and serving (see issues #3 and #4); nothing here yet.
