"""All I/O lives here: MQTT clients and the embedded broker."""
