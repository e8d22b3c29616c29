"""`mltrade`: the platform's one command line (train, tune, deploy, backtest, walk-forward,
serve, sentiment, data). Entry points only: each command parses its options into typed
settings, calls one library function and prints the result."""
