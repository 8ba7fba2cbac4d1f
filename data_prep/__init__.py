"""Turn ultrasound clips (real files or synthetic) into sharded frame datasets."""
