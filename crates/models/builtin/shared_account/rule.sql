WITH r AS (
  SELECT d.payment_id, d.account_no, d.period,
         CASE WHEN p.household_id IS NULL THEN 'person:' || d.person_id
              ELSE 'household:' || p.household_id END AS household
  FROM disbursements d
  LEFT JOIN persons p ON p.person_id = d.person_id
  WHERE d.account_no IS NOT NULL
),
g AS (
  SELECT account_no, period FROM r
  GROUP BY account_no, period
  HAVING count(DISTINCT household) >= 2
)
SELECT DISTINCT r.payment_id
FROM r JOIN g ON r.account_no = g.account_no AND r.period = g.period
