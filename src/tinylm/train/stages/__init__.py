"""The training stages, one file each: their data and objective; the rest is `tinylm.train.stage`."""
