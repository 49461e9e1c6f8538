-- Columns of imported MedQ-Bench rows that the items table has no place for (extra TSV columns,
-- the original answer spelling such as "2" for C, column order), so that an export reproduces
-- the imported file. JSON text; NULL for items that did not come from a table.
ALTER TABLE items ADD COLUMN extra VARCHAR;
