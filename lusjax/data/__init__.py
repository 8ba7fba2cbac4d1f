"""Data side of training: shard format, readers, pair sampling, augmentation."""
