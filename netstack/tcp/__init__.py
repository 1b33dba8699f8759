"""Sans-IO TCP (RFC 9293): segment codec, one state machine per connection, TIME_WAIT table."""
