"""The worker: settings, the Faust app, its agents (the stages of the data flow), the definitions
reader, metrics, and the one place that changes Faust itself."""
