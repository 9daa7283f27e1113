-- Extension: a reservation prepared for a cart commit (commands prepare and
-- unprepare; changelog events prepared and unprepared). A prepared reservation
-- is active, names its order and never expires; only commit and unprepare
-- change it. Rows written before this migration were never prepared.

ALTER TABLE reservations ADD COLUMN prepared boolean NOT NULL DEFAULT false;
