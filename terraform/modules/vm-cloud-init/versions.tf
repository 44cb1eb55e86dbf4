terraform {
  # Pure rendering: no provider is needed.
  required_version = ">= 1.5.0"
}
