-- Each query runs at the city over all nodes and in one DataFusion context over all files.
-- Queries are separated by lines holding only a semicolon. Every one is an aggregate
-- whose groups count at least 5 persons, so the city answers it in full.
SELECT count(*) FROM disbursements
;
SELECT county_code, count(*), sum(amount) FROM disbursements GROUP BY county_code ORDER BY county_code
;
SELECT subsidy_type, count(*), sum(amount), min(amount), max(amount), avg(amount) FROM disbursements GROUP BY subsidy_type ORDER BY subsidy_type
;
SELECT county_code, township, count(*) FROM disbursements GROUP BY county_code, township ORDER BY 1, 2
;
SELECT period, count(*), sum(amount) FROM disbursements GROUP BY period ORDER BY period
;
SELECT date_trunc('year', period) AS y, county_code, sum(amount) FROM disbursements GROUP BY 1, 2 ORDER BY 1, 2
;
SELECT count(*) FROM disbursements WHERE period BETWEEN DATE '2022-01-01' AND DATE '2022-12-31'
;
SELECT county_code, count(*) FROM disbursements WHERE county_code = '140215' GROUP BY county_code
;
SELECT county_code, count(*) FROM disbursements WHERE county_code IN ('140212', '140226') GROUP BY county_code ORDER BY 1
;
SELECT subsidy_type, count(DISTINCT person_id) FROM disbursements GROUP BY subsidy_type ORDER BY 1
;
SELECT count(DISTINCT person_id) FROM disbursements
;
SELECT county_code, count(*) AS n FROM disbursements GROUP BY county_code HAVING count(*) > 1000 ORDER BY n DESC, county_code
;
SELECT township, sum(amount) AS total FROM disbursements GROUP BY township ORDER BY total DESC, township LIMIT 10
;
SELECT date_trunc('month', paid_on) AS m, count(*) FROM disbursements WHERE subsidy_type = 'GAOLING' GROUP BY 1 ORDER BY 1 LIMIT 5
;
SELECT CASE WHEN amount >= 1000 THEN 'large' WHEN amount >= 300 THEN 'medium' ELSE 'small' END AS band, count(*) FROM disbursements GROUP BY 1 ORDER BY 1
;
SELECT d.county_code, count(*) FROM disbursements d JOIN persons p ON p.county_code = d.county_code AND p.person_id = d.person_id WHERE p.death_date IS NOT NULL GROUP BY d.county_code ORDER BY 1
;
SELECT p.gender, count(*), sum(d.amount) FROM disbursements d JOIN persons p ON p.county_code = d.county_code AND p.person_id = d.person_id GROUP BY p.gender ORDER BY 1
;
SELECT s.department, sum(d.amount) FROM disbursements d JOIN subsidy_standards s ON s.subsidy_type = d.subsidy_type GROUP BY s.department ORDER BY 1
;
SELECT count(*), sum(s.cap - d.amount) FROM disbursements d JOIN subsidy_standards s ON s.subsidy_type = d.subsidy_type WHERE d.amount <= s.cap
;
SELECT count(*) FROM persons WHERE death_date IS NULL
;
SELECT county_code, count(*) FROM persons WHERE death_date IS NOT NULL GROUP BY county_code ORDER BY 1
;
SELECT count(*), count(end_date) FROM payroll
;
SELECT county_code, employer_type, count(*) FROM payroll WHERE end_date IS NULL GROUP BY 1, 2 ORDER BY 1, 2
;
SELECT level, count(*) FROM disability_certs WHERE revoked_on IS NULL GROUP BY level ORDER BY level
;
SELECT gender, count(*), min(birth_date), max(birth_date) FROM persons GROUP BY gender ORDER BY gender
;
SELECT county_code, count(DISTINCT household_id) FROM persons GROUP BY county_code ORDER BY 1
;
SELECT county_code, count(*) FROM disbursements WHERE account_no IS NULL GROUP BY 1 ORDER BY 1
;
SELECT county_code, sum(CASE WHEN subsidy_type = 'DIBAO' THEN amount ELSE 0 END) FROM disbursements GROUP BY county_code ORDER BY 1
;
SELECT date_part('year', period) AS y, count(DISTINCT person_id) FROM disbursements GROUP BY 1 ORDER BY 1
;
SELECT township, count(*) FROM disbursements WHERE county_code = '140215' AND subsidy_type = 'YULU' GROUP BY township ORDER BY 2 DESC, 1 LIMIT 3
;
SELECT * FROM subsidy_standards ORDER BY subsidy_type
;
SELECT county_code, round(avg(amount), 2) FROM disbursements WHERE subsidy_type IN ('DIBAO', 'TEKUN') GROUP BY county_code ORDER BY 1
;
SELECT count(*) FROM disbursements WHERE county_code = '999999'
;
SELECT max(paid_on), min(period) FROM disbursements WHERE subsidy_type = 'GENGDI'
;
SELECT d.county_code, count(*) FROM disbursements d WHERE EXISTS (SELECT 1 FROM payroll p WHERE p.county_code = d.county_code AND p.person_id = d.person_id) GROUP BY 1 ORDER BY 1
;
SELECT county_code, count(*) FROM disbursements WHERE amount > 500 AND period >= DATE '2023-01-01' GROUP BY county_code ORDER BY 2 DESC, 1 LIMIT 4
;
SELECT mask_name(name) AS surname, count(DISTINCT person_id) AS persons FROM disbursements WHERE county_code = '140215' GROUP BY 1 HAVING count(DISTINCT person_id) >= 5 ORDER BY 2 DESC, 1 LIMIT 5
;
SELECT subsidy_type, round(stddev(amount), 4) AS sd, round(var_pop(amount), 2) AS v FROM disbursements WHERE subsidy_type IN ('DIBAO', 'GAOLING') GROUP BY 1 ORDER BY 1
;
SELECT p.gender, count(*), count(d.amount) FROM persons p LEFT JOIN disbursements d ON d.county_code = p.county_code AND d.person_id = p.person_id GROUP BY p.gender ORDER BY 1
;
SELECT d.county_code, count(*), count(p.death_date) FROM disbursements d LEFT JOIN persons p ON p.county_code = d.county_code AND p.person_id = d.person_id AND p.death_date IS NOT NULL GROUP BY 1 ORDER BY 1
;
SELECT d.county_code, count(*) FROM disbursements d WHERE NOT EXISTS (SELECT 1 FROM payroll p WHERE p.county_code = d.county_code AND p.person_id = d.person_id) GROUP BY 1 ORDER BY 1
;
SELECT count(*), count(death_date), min(birth_date), max(birth_date) FROM persons
;
SELECT county_code, count(*), min(start_date), max(end_date), count(end_date) FROM payroll GROUP BY county_code ORDER BY 1
;
SELECT county_code, count(*) FROM disbursements WHERE amount > (SELECT avg(amount) FROM disbursements) GROUP BY 1 ORDER BY 1
;
SELECT subsidy_type, round(corr(amount, date_part('year', period)), 6), round(covar_pop(amount, amount), 2) FROM disbursements GROUP BY 1 ORDER BY 1
;
SELECT a.county_code, a.n, b.m FROM (SELECT county_code, count(*) AS n FROM disbursements GROUP BY 1) a JOIN (SELECT county_code, count(*) AS m FROM persons GROUP BY 1) b ON a.county_code = b.county_code ORDER BY 1
;
SELECT a.county_code, a.subsidy_type, a.s, s.cap FROM (SELECT county_code, subsidy_type, sum(amount) AS s FROM disbursements GROUP BY 1, 2) a JOIN subsidy_standards s USING (subsidy_type) ORDER BY 1, 2
;
SELECT a.subsidy_type, a.n, b.m FROM (SELECT subsidy_type, count(*) AS n FROM disbursements WHERE county_code = '140215' GROUP BY 1) a JOIN (SELECT subsidy_type, count(*) AS m FROM disbursements GROUP BY 1) b USING (subsidy_type) ORDER BY 1
;
SELECT county_code, count(*) FROM disbursements d WHERE amount > (SELECT avg(amount) FROM disbursements d2 WHERE d2.county_code = d.county_code) GROUP BY 1 ORDER BY 1
;
SELECT subsidy_type, count(*) FROM disbursements d WHERE EXISTS (SELECT 1 FROM subsidy_standards s WHERE s.subsidy_type = d.subsidy_type AND s.min_age IS NOT NULL) GROUP BY 1 ORDER BY 1
;
SELECT regexp_replace(township, '[乡镇]$', '') AS t, count(*) FROM disbursements WHERE county_code = '140212' AND split_part(village, '村', 1) <> '' GROUP BY 1 ORDER BY 1
;
SELECT county_code, count(*), sum(amount) FROM disbursements WHERE subsidy_type IN (SELECT subsidy_type FROM disbursements GROUP BY 1 HAVING avg(amount) > 300) GROUP BY 1 ORDER BY 1
;
SELECT county_code, count(*), sum(amount) FROM disbursements WHERE county_code = '140215' OR subsidy_type NOT IN (SELECT subsidy_type FROM disbursements GROUP BY 1 ORDER BY sum(amount) DESC LIMIT 1) GROUP BY 1 ORDER BY 1
;
SELECT count(*) FROM (SELECT DISTINCT person_id FROM disbursements WHERE subsidy_type = 'GAOLING') t
;
SELECT subsidy_type, count(*) FROM (SELECT subsidy_type, person_id FROM disbursements WHERE period >= DATE '2023-01-01' GROUP BY 1, 2) t GROUP BY 1 ORDER BY 1
;
SELECT subsidy_type FROM disbursements WHERE county_code = '140215' GROUP BY 1 UNION SELECT subsidy_type FROM disbursements WHERE county_code = '140212' GROUP BY 1 ORDER BY 1
;
SELECT subsidy_type, count(*) FROM disbursements GROUP BY 1 UNION SELECT subsidy_type, count(*) FROM disbursements WHERE county_code = '140212' GROUP BY 1 ORDER BY 1, 2
;
SELECT s.department, count(*), count(s.cap) FROM disbursements d LEFT JOIN subsidy_standards s ON d.subsidy_type = s.subsidy_type AND d.amount <= s.cap GROUP BY 1 ORDER BY 1
;
SELECT county_code, count(*) FROM (SELECT county_code FROM disbursements UNION ALL SELECT county_code FROM payroll) t GROUP BY 1 ORDER BY 1
;
SELECT k, count(*) FROM (SELECT subsidy_type AS k FROM disbursements UNION ALL SELECT employer_type FROM payroll) t GROUP BY 1 ORDER BY 1
;
SELECT count(*), count(DISTINCT person_id) FROM (SELECT person_id FROM persons WHERE death_date IS NOT NULL UNION ALL SELECT person_id FROM payroll) t
;
SELECT t.county_code, count(*) FROM (SELECT county_code FROM disbursements UNION ALL SELECT county_code FROM payroll) t WHERE t.county_code = '140215' GROUP BY 1
;
SELECT count(DISTINCT d) FROM (SELECT period AS d FROM disbursements WHERE subsidy_type = 'DIBAO' UNION ALL SELECT period AS d FROM disbursements WHERE amount > 500) t
;
SELECT county_code, count(DISTINCT township) FROM (SELECT township, county_code FROM disbursements WHERE subsidy_type = 'DIBAO' UNION ALL SELECT township, county_code FROM disbursements WHERE amount > 500) t GROUP BY 1 ORDER BY 1
;
SELECT county_code, subsidy_type, median(amount), count(DISTINCT person_id) FROM disbursements GROUP BY 1, 2 ORDER BY 1, 2
;
SELECT county_code, percentile_cont(0.9) WITHIN GROUP (ORDER BY amount) FROM disbursements WHERE period >= DATE '2023-01-01' GROUP BY 1 ORDER BY 1
;
SELECT county_code, count(DISTINCT person_id) FROM disbursements GROUP BY 1 ORDER BY 1
;
SELECT median(amount), count(*) FROM disbursements WHERE county_code = '140215' AND subsidy_type = 'DIBAO'
;
SELECT county_code, subsidy_type, count(*), median(amount) FROM disbursements GROUP BY county_code, ROLLUP(subsidy_type) ORDER BY 1, 2
;
SELECT s.subsidy_type, coalesce(a.n, 0) FROM subsidy_standards s LEFT JOIN (SELECT subsidy_type, count(*) AS n FROM disbursements WHERE amount > 2500 GROUP BY 1) a ON a.subsidy_type = s.subsidy_type ORDER BY 1
;
SELECT subsidy_type, sum(amount), rank() OVER (ORDER BY sum(amount) DESC) FROM disbursements WHERE county_code = '140215' GROUP BY 1 ORDER BY 1
;
SELECT county_code, round(cbrt(sum(amount)), 6), to_hex(count(*)) FROM disbursements GROUP BY 1 ORDER BY 1
;
SELECT subsidy_type, sum(amount) FROM disbursements WHERE county_code = '140215' GROUP BY 1 HAVING cbrt(sum(amount)) > 10 ORDER BY md5(subsidy_type)
;
SELECT a.county_code, a.n, b.m FROM (SELECT county_code, count(*) AS n FROM disbursements GROUP BY 1) a JOIN (SELECT county_code, count(*) AS m FROM persons GROUP BY 1) b ON a.county_code = b.county_code AND md5(a.county_code) <> md5(cast(b.m AS VARCHAR)) ORDER BY 1
;
SELECT county_code, count(*) FROM disbursements WHERE subsidy_type = ANY(SELECT subsidy_type FROM subsidy_standards WHERE excludes_payroll) GROUP BY 1 ORDER BY 1
;
SELECT d.subsidy_type, count(*) FROM disbursements d WHERE d.subsidy_type <> ALL(SELECT e.subsidy_type FROM disbursements e GROUP BY 1 HAVING avg(e.amount) > 300) GROUP BY 1 ORDER BY 1
;
SELECT count(*) FROM (SELECT DISTINCT person_id, subsidy_type FROM disbursements)
;
SELECT county_code, count(*), count(person_id) FROM (SELECT county_code, township, person_id FROM disbursements WHERE period >= DATE '2023-01-01' GROUP BY 1, 2, 3) t GROUP BY 1 ORDER BY 1
;
SELECT county_code, count(DISTINCT (person_id, subsidy_type)) FROM disbursements WHERE amount > 100 GROUP BY 1 ORDER BY 1
;
SELECT count(DISTINCT level), count(DISTINCT issued_on) FROM disability_certs WHERE revoked_on IS NULL
;
SELECT d.subsidy_type, count(DISTINCT p.birth_date), count(DISTINCT d.amount) FROM disbursements d JOIN persons p ON p.person_id = d.person_id AND p.county_code = d.county_code GROUP BY 1 ORDER BY 1
;
SELECT count(*) FROM (SELECT county_code, person_id FROM disbursements GROUP BY 1, 2 HAVING count(DISTINCT subsidy_type) > 1) t
;
SELECT count(1), count(amount) FROM disbursements WHERE amount IS DISTINCT FROM NULL
;
SELECT county_code, subsidy_type, count(*), sum(amount) FROM disbursements GROUP BY CUBE (county_code, subsidy_type) ORDER BY 1 NULLS FIRST, 2 NULLS FIRST
;
SELECT county_code, n, lead(n) OVER (ORDER BY county_code) - n AS step FROM (SELECT county_code, count(*) AS n FROM disbursements GROUP BY 1) t ORDER BY 1
;
SELECT township, count(*) FROM disbursements WHERE township ILIKE '%镇' GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 10
;
SELECT subsidy_type, count(*) FROM disbursements WHERE TRY_CAST(amount AS INT) > 100 GROUP BY 1 ORDER BY 1
;
SELECT county_code, sum(amount) FILTER (WHERE subsidy_type = 'DIBAO') AS dibao, count(*) FILTER (WHERE subsidy_type <> 'DIBAO') AS other FROM disbursements GROUP BY 1 ORDER BY 1
;
SELECT county_code, count(*) FROM disbursements WHERE NOT starts_with(payment_id, county_code) GROUP BY 1 ORDER BY 1
;
SELECT extract(month FROM period) AS m, sum(amount), count(DISTINCT county_code) FROM disbursements WHERE period >= DATE '2023-01-01' AND period < DATE '2024-01-01' GROUP BY 1 ORDER BY 1
;
SELECT subsidy_type, count(DISTINCT paid_on) FROM disbursements WHERE amount > 300 GROUP BY 1 ORDER BY 1
;
SELECT count(DISTINCT date_part('year', birth_date)) AS years FROM persons WHERE death_date IS NULL
;
SELECT subsidy_type, count(DISTINCT CAST(period AS VARCHAR)) AS periods FROM disbursements GROUP BY 1 ORDER BY 1
;
SELECT gender, count(*) FROM persons WHERE township IN (SELECT DISTINCT township FROM disbursements WHERE subsidy_type = 'GAOLING') GROUP BY 1 ORDER BY 1
;
SELECT county_code, count(*) FROM disbursements WHERE (county_code, subsidy_type) IN (('140212', 'DIBAO'), ('140213', 'GAOLING')) GROUP BY 1 ORDER BY 1
;
SELECT s.name_zh, count(*) FROM disbursements d JOIN (SELECT DISTINCT subsidy_type, name_zh FROM subsidy_standards) s ON s.subsidy_type = d.subsidy_type WHERE d.county_code = '140213' GROUP BY 1 ORDER BY 1
;
SELECT d.county_code, sum(d.amount) FROM disbursements d JOIN (SELECT subsidy_type FROM subsidy_standards WHERE min_age IS NOT NULL UNION SELECT subsidy_type FROM subsidy_standards WHERE requires_cert_level IS NOT NULL) s ON s.subsidy_type = d.subsidy_type GROUP BY 1 ORDER BY 1
;
SELECT a.county_code, count(DISTINCT a.account_no) FROM disbursements a JOIN disbursements b ON a.county_code = b.county_code AND a.account_no = b.account_no AND a.person_id <> b.person_id GROUP BY 1 ORDER BY 1
;
SELECT v.label, count(*), sum(d.amount) FROM disbursements d JOIN (VALUES ('DIBAO', '低保'), ('GAOLING', '高龄')) v(t, label) ON v.t = d.subsidy_type GROUP BY 1 ORDER BY 1
;
SELECT county_code, subsidy_type, count(*), sum(amount) FROM disbursements GROUP BY GROUPING SETS ((county_code), (subsidy_type), ()) ORDER BY 1, 2
;
WITH per_county AS (SELECT county_code, count(*) AS n FROM disbursements GROUP BY county_code) SELECT max(n), min(n), sum(n), avg(n) FROM per_county
;
WITH paid AS (SELECT county_code, count(*) AS n, sum(amount) AS s FROM disbursements WHERE amount > 200 GROUP BY 1), employed AS (SELECT county_code, count(*) AS m FROM payroll WHERE end_date IS NULL GROUP BY 1) SELECT paid.county_code AS paid_in, employed.county_code AS employed_in, n, s, m FROM paid FULL JOIN employed ON paid.county_code = employed.county_code ORDER BY 1, 2
;
SELECT county_code, count(*) AS n, rank() OVER (ORDER BY count(*) DESC) AS r, sum(amount) * 100 / sum(sum(amount)) OVER () AS share FROM disbursements GROUP BY county_code ORDER BY 1
;
SELECT bool_and(amount > 0), bool_or(amount > 1000), bool_or(period > paid_on) FROM disbursements
;
SELECT county_code, count(*) FROM disbursements GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 3 OFFSET 2
;
SELECT to_char(period, '%Y') AS y, sum(amount), count(DISTINCT subsidy_type) FROM disbursements GROUP BY 1 ORDER BY 1
;
SELECT count(DISTINCT d) FROM (SELECT issued_on AS d FROM disability_certs UNION ALL SELECT period FROM disbursements) t
;
SELECT count(x) FROM (SELECT county_code AS x FROM disbursements UNION ALL SELECT county_code FROM payroll WHERE end_date IS NULL) t
;
SELECT d.county_code, count(*), sum(d.amount - s.cap) FROM disbursements d JOIN subsidy_standards s ON d.amount > s.cap WHERE s.subsidy_type = 'DIBAO' GROUP BY 1 ORDER BY 1
;
SELECT county_code, count(*) FROM disbursements WHERE amount > ALL (SELECT cap FROM subsidy_standards WHERE department = '民政') GROUP BY 1 ORDER BY 1
;
SELECT s.department, count(*) FROM payroll p CROSS JOIN subsidy_standards s WHERE p.end_date IS NULL GROUP BY 1 ORDER BY 1
;
SELECT d.county_code, count(*), sum(d.amount) FROM disbursements d JOIN (SELECT subsidy_type, avg(amount) AS a FROM disbursements GROUP BY 1) x ON x.subsidy_type = d.subsidy_type AND d.amount > x.a GROUP BY 1 ORDER BY 1
;
SELECT subsidy_type, string_agg(DISTINCT department, ',' ORDER BY department) AS departments, array_agg(DISTINCT department ORDER BY department DESC) AS last_first FROM disbursements WHERE period >= DATE '2023-01-01' GROUP BY 1 ORDER BY 1
;
SELECT county_code, string_agg(DISTINCT subsidy_type, ',' ORDER BY subsidy_type) AS types, count(*), sum(amount), max(paid_on) FROM disbursements GROUP BY 1 ORDER BY 1
;
SELECT department FROM disbursements WHERE period >= DATE '2023-01-01' INTERSECT SELECT department FROM disbursements WHERE amount > 1000 ORDER BY 1
;
SELECT subsidy_type FROM disbursements EXCEPT SELECT subsidy_type FROM disbursements WHERE department IN ('教育', '农业农村') ORDER BY 1
;
SELECT county_code, count(*) FROM disbursements d WHERE NOT EXISTS (SELECT 1 FROM disbursements e WHERE e.department = d.department AND e.amount > 2500) GROUP BY 1 ORDER BY 1
;
SELECT gender, count(*) FROM persons p WHERE EXISTS (SELECT 1 FROM disbursements d WHERE d.township = p.township AND d.subsidy_type = 'GAOLING') GROUP BY 1 ORDER BY 1
;
SELECT subsidy_type, string_agg(DISTINCT department, ',' ORDER BY department) AS departments, avg(amount), count(DISTINCT person_id) FROM disbursements GROUP BY 1 ORDER BY 1
;
SELECT s.subsidy_type, s.cap, count(d.payment_id), coalesce(sum(d.amount), 0) FROM subsidy_standards s LEFT JOIN disbursements d ON d.subsidy_type = s.subsidy_type AND d.amount > 2500 GROUP BY 1, 2 ORDER BY 1
;
SELECT subsidy_type, department FROM subsidy_standards s WHERE NOT EXISTS (SELECT 1 FROM disbursements d WHERE d.subsidy_type = s.subsidy_type AND d.amount > s.cap * 2) ORDER BY 1
;
SELECT y.value AS year, count(d.payment_id), coalesce(sum(d.amount), 0) FROM generate_series(2019, 2025) y LEFT JOIN disbursements d ON date_part('year', d.period) = y.value GROUP BY 1 ORDER BY 1
;
SELECT s.subsidy_type, count(DISTINCT d.person_id), count(d.payment_id) FROM subsidy_standards s LEFT JOIN disbursements d ON d.subsidy_type = s.subsidy_type AND d.amount > 1500 GROUP BY 1 ORDER BY 1
;
SELECT x.subsidy_type, x.a FROM (SELECT subsidy_type, avg(amount) AS a FROM disbursements GROUP BY 1) x WHERE EXISTS (SELECT 1 FROM disbursements d WHERE d.subsidy_type = x.subsidy_type AND d.amount > 3 * x.a) ORDER BY 1
;
SELECT subsidy_type, count(DISTINCT CASE WHEN amount > 300 THEN person_id END), count(CASE WHEN period >= DATE '2023-01-01' THEN person_id END) FROM disbursements GROUP BY 1 ORDER BY 1
;
SELECT county_code, count(*), sum(amount) FROM (SELECT county_code, amount, avg(amount) OVER (PARTITION BY county_code, subsidy_type) AS a, count(*) OVER (PARTITION BY subsidy_type, county_code) AS n FROM disbursements) t WHERE amount > a AND n > 100 GROUP BY 1 ORDER BY 1
;
SELECT county_code, count(*), sum(amount) FROM disbursements WHERE (county_code LIKE '14022%' AND county_code < '140224') OR CAST(county_code AS INT) = 140213 GROUP BY 1 ORDER BY 1
;
SELECT subsidy_type, count(*), sum(amount), max(paid_on) FROM disbursements WHERE amount > 0 AND period >= DATE '2018-01-01' AND payment_id IS NOT NULL GROUP BY 1 ORDER BY 1
;
SELECT DISTINCT subsidy_type FROM disbursements ORDER BY 1 DESC LIMIT 3
;
SELECT subsidy_type, max(amount) AS top FROM disbursements GROUP BY 1 ORDER BY 2 DESC LIMIT 3
;
SELECT count(*) AS n FROM (SELECT DISTINCT county_code FROM persons WHERE death_date IS NULL LIMIT 3) s
;
SELECT DISTINCT ON (county_code, subsidy_type) county_code, subsidy_type, department FROM disbursements ORDER BY county_code, subsidy_type, department
;
SELECT subsidy_type, first_value(amount ORDER BY amount DESC) AS top, last_value(paid_on ORDER BY paid_on) AS latest FROM disbursements GROUP BY 1 ORDER BY 1
;
SELECT county_code, subsidy_type FROM disbursements EXCEPT SELECT county_code, subsidy_type FROM disbursements WHERE subsidy_type <> 'YULU' ORDER BY 1, 2
;
SELECT county_code, department FROM disbursements INTERSECT SELECT county_code, department FROM disbursements WHERE period >= DATE '2023-01-01' ORDER BY 1, 2
