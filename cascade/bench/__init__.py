"""The measuring wing: policies side by side (`cascade bench`), α sweeps (`cascade sweep`), the
store's logging cost (`cascade store-cost`).

    defaults.py     the shipped policies and prompts a command runs when not told
    rows.py         what a bench row is: one of our policies on its engine (PolicyRow)
    peers.py        transformers' own speculative decoding as rows beside ours
    run.py          models loaded once (ModelCache), the rows planned, the three phases run
    summary.py      the measurements turned into result rows: speed-up, quality, identical tokens
    results.py      the result schema (BenchRow, BenchResult) and the machine it ran on
    quality.py      chrF and the target's log-prob of the emitted tokens
    report.py       a result as a terminal table and a JSON file
    sweep.py        α / lenience curves, the Pareto frontier, the 1% crossings
    sweep_plot.py   a sweep's CSV, JSON and PNG
    store_cost.py   what logging every decision to the store costs
    cli.py          the bench, sweep and store-cost commands (added to `cascade` by cascade/cli.py)

Nothing in the core imports this package; the cost model it uses (`cascade.runtime.costmodel`) is core.
"""
