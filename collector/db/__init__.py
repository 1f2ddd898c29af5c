"""The collector's relational database: models, engine, migrations, housekeeping."""
