recipe = {"name": "not a Recipe"}
