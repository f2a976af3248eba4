"""Attacks tried as an attacker would, and refused."""
