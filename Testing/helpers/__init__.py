"""Helpers shared by the robustness and security tests (broken inputs, models, guards)."""
