"""Image folders: scanning and splitting (no TensorFlow) and tf.data pipelines."""
