SELECT d.payment_id
FROM disbursements d
JOIN subsidy_standards s
  ON s.subsidy_type = d.subsidy_type
 AND s.valid_from <= d.period AND (s.valid_to IS NULL OR d.period <= s.valid_to)
WHERE s.requires_cert_level IS NOT NULL
  AND NOT EXISTS (
    SELECT 1 FROM disability_certs c
    WHERE c.person_id = d.person_id
      AND c.level <= s.requires_cert_level
      AND c.issued_on <= d.period
      AND (c.revoked_on IS NULL OR c.revoked_on > d.period))
