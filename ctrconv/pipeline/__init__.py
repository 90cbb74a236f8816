"""The staged transfer pipeline: resolve -> select platforms -> plan -> copy+verify -> name."""
