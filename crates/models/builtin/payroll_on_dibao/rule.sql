-- Payments of types that exclude payroll staff, with the person and period to link.
SELECT d.payment_id, upper(trim(d.person_id)) AS link_person, d.period
FROM disbursements d
JOIN subsidy_standards s
  ON s.subsidy_type = d.subsidy_type
 AND s.valid_from <= d.period AND (s.valid_to IS NULL OR d.period <= s.valid_to)
WHERE s.excludes_payroll
