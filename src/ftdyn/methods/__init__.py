"""Fine-tuning methods: plans of stages (`plan`), one training loop (`module`, `fit`), the linear
probe (`linear_probe`), stage checkpoints (`checkpoints`) and sharded training (`sharding`)."""
