"""Evaluation: metrics (scikit-learn), calibration, decision thresholds,
plots and the run report."""
