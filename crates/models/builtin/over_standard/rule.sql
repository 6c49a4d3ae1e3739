SELECT d.payment_id
FROM disbursements d
JOIN subsidy_standards s
  ON s.subsidy_type = d.subsidy_type
 AND s.valid_from <= d.period AND (s.valid_to IS NULL OR d.period <= s.valid_to)
WHERE d.amount > s.cap
