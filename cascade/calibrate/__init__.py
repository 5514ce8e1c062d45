"""`cascade calibrate`: the α search, its replays and scores."""
