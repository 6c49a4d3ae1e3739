-- Payroll intervals of this node; a period p is covered when start_date <= p and
-- (end_date IS NULL OR end_date >= p).
SELECT upper(trim(person_id)) AS link_person, start_date, end_date
FROM payroll
