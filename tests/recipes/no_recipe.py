SETTINGS = {"epochs": 3}
