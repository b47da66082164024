"""The pool scheduler: admission, tenant lists, tide moves and pool-level scaling."""
