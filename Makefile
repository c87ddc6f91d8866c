# Convenience aliases; dev.py does the work and needs nothing but Python, Node and npm.
.PHONY: demo test lint setup
demo:
	python3 dev.py demo
test:
	python3 dev.py test
lint:
	python3 dev.py lint
setup:
	python3 dev.py setup
