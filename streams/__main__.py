"""``python -m streams worker ...``: the Faust worker's command line (what `qu up` starts)."""

from streams.app import app

app.main()
