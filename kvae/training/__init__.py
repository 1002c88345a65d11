"""Training: runs (what ``kvae train`` does), checkpoints that resume exactly, callbacks."""
