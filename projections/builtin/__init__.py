"""Projections that ship with Eventfold, written only through the public API
(``projections.api``), as a user's own would be."""
