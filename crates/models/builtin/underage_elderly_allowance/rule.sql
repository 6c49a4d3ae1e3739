WITH aged AS (
  SELECT d.payment_id, d.period, s.min_age,
         TRY_CAST(substr(d.person_id, 7, 4) || '-' || substr(d.person_id, 11, 2) || '-'
                  || substr(d.person_id, 13, 2) AS DATE) AS birth
  FROM disbursements d
  JOIN subsidy_standards s
    ON s.subsidy_type = d.subsidy_type
   AND s.valid_from <= d.period AND (s.valid_to IS NULL OR d.period <= s.valid_to)
  WHERE s.min_age IS NOT NULL
)
SELECT payment_id
FROM aged
WHERE birth IS NOT NULL
  AND date_part('year', period) - date_part('year', birth)
      - CASE WHEN date_part('month', period) * 100 + date_part('day', period)
                  < date_part('month', birth) * 100 + date_part('day', birth)
             THEN 1 ELSE 0 END
      < min_age
