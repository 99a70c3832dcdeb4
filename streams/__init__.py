"""Pure streaming core of debtor-segments: no Kafka, Faust or Prometheus in here."""
