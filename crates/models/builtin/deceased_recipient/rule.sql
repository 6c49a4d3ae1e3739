SELECT DISTINCT d.payment_id
FROM disbursements d
JOIN persons p ON p.person_id = d.person_id
WHERE p.death_date IS NOT NULL AND p.death_date < d.period
