"""bitsmith.export (see DESIGN.md); filled by later issues."""
