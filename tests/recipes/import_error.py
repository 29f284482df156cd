import kerastl_does_not_exist  # noqa: F401
