"""The model: `TransferClassifier`, backbone families and their layer groups,
pooling, freezing, presets and the preprocessing a preset carries."""
