"""`toolkit top`: the live process dashboard (model: what is shown; session: the backend
and the clock; render: the rich TUI; batch: top -b style output)."""
